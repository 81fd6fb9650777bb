"""Plain ``nn.Module`` models: anonymizer f_A, privacy reviewer f_P, the stand-in's recognizer."""
