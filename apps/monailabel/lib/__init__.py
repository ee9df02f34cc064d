"""The app's code (MONAI Label imports ``lib`` from the app folder, by its convention)."""
