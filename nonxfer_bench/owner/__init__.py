"""The data owner's commands: encode an image folder into a release of NE files, verify a release."""
