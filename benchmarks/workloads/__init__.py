"""The side-by-side workloads W1-W3: one command each, every stack in its own process."""
