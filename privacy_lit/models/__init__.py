"""Plain ``nn.Module`` models: the anonymizer f_A, the privacy reviewer f_P, the stand-in recognizer."""
