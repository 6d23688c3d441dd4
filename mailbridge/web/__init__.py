"""The web app (``mailbridge web``): Starlette on uvicorn, over the composition root ``app.py``."""
