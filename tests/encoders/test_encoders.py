"""The shared encoders that ship inside wheels: OCR, MiniLM sentences, Open-NSFW pooled image features."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from verticals.encoders import EncoderError, read_text

pytestmark = pytest.mark.slow


def png(colour: str, text: str = "") -> bytes:
    import matplotlib
    from PIL import ImageFont

    image = Image.new("RGB", (640, 120), colour)
    if text:
        font = ImageFont.truetype(f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans-Bold.ttf", 36)
        ImageDraw.Draw(image).text((20, 40), text, font=font, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_ocr_reads_a_caption_and_refuses_what_is_not_an_image() -> None:
    assert read_text(png("white", "WASH YOUR HANDS")) == "WASH YOUR HANDS"
    assert read_text(png("white")) == ""
    with pytest.raises(EncoderError, match="cannot read the image"):
        read_text(b"not an image")


def test_sentence_embeddings_are_unit_length_and_mean_something() -> None:
    from verticals.encoders.text import embed_texts

    vectors = embed_texts(["The patient has chest pain.", "Thoracic pain reported by the patient.",
                           "Sunset at the beach with friends."])
    assert vectors.shape == (3, 384)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-5)
    assert vectors[0] @ vectors[1] > 0.5 > vectors[0] @ vectors[2]


def test_image_features_are_the_pooled_layer_and_tell_pictures_apart() -> None:
    from verticals.encoders.image import FEATURES, image_features

    features = image_features([png("white"), png("white"), png("navy", "STORM")])
    assert features.shape == (3, FEATURES) and np.isfinite(features).all()
    assert np.allclose(features[0], features[1]) and not np.allclose(features[0], features[2])
    with pytest.raises(EncoderError, match="cannot read an image"):
        image_features([b"\x89PNG broken"])


@pytest.mark.parametrize(("truths", "reads", "rate"), [
    (["sunset at the beach"], ["SUNSET  AT THE BEACH"], 0.0),       # case and spacing are not errors
    (["sunset at the beach"], ["SUNSETAT THE BEACH"], 1 / 19),       # a lost space is one deletion
    (["abcd", "ef"], ["abed", ""], 3 / 6),                            # one substitution, two deletions
    (["ab"], ["abxy"], 1.0),                                          # insertions count too
])
def test_character_error_rate_counts_edits_over_the_truths_characters(truths, reads, rate) -> None:  # type: ignore[no-untyped-def]
    from verticals.encoders import character_error_rate

    assert character_error_rate(truths, reads) == pytest.approx(rate)
