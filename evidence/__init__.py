"""Evidence windows, search adapters, l0→l3 transforms, pools and bundle plans."""
