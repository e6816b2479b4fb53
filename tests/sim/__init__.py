"""The simulated DLMS meter's tests: a package, so that its conftest is not the root conftest's name."""
