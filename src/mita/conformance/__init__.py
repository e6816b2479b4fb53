"""mita.conformance: the shipped STS vectors run through the engine, and another system's tokens checked."""
