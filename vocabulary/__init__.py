"""The engine's declared vocabulary: what Python reads from the formula graph (``outputs.yaml``).

Data, not code: the loader checks every loaded formula set against it, so an override that drops
or changes something the engine reads fails at load, naming the file and the formula."""
