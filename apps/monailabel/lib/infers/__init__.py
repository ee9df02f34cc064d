"""The app's infer task (``lesion_synthesis``) and the request mapping it uses (``synthesis_request``, plain
Python)."""
