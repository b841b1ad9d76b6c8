"""verticals: four published AI systems, working offline on a CPU and scaling out to GPUs.

Systems live in sub-packages (`verticals.llm` first: the one door to language models).
Nothing happens at import: no logging set-up, no seeding, no model loading.
"""

__version__ = "0.1.0"
