"""How a release is stored as files (float32 .npy, 16/8-bit PNG, JPEG) and read back."""
