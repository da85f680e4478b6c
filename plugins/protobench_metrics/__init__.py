"""Built-in metrics, computed through torch-fidelity with a named feature extractor."""
