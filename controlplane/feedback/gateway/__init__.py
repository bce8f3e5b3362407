"""The prediction gateway: FastAPI in front of Triton, with a prediction log and feedback."""
