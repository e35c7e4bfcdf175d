"""Generative models the reconstruction attacks use: a small conv autoencoder and DDPM purification."""
