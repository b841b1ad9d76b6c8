"""A stand-in for a multimodal OpenAI-compatible server: it accepts image parts, keeps what it was sent,
and answers with the reply it is given (a real vision model cannot run on this machine's CPU in a test)."""

from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import FastAPI, Request


class Seer:
    """The server's state: every request's messages, the images decoded from them, the next reply."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.requests: list[list[dict[str, Any]]] = []
        self.images: list[bytes] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> dict[str, Any]:
            body = await request.json()
            self.requests.append(body["messages"])
            for message in body["messages"]:
                for part in message["content"] if isinstance(message["content"], list) else []:
                    if part["type"] == "image_url":
                        self.images.append(base64.b64decode(part["image_url"]["url"].split(",", 1)[1]))
            return {"id": "chatcmpl-seer", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "seer"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": self.reply}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

        return app
