"""sentinel-ops: build, test, push, measure, benchmark and validate images."""
