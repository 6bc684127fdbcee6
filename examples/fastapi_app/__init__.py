"""A small FastAPI app whose posts and users carry counter caches."""
