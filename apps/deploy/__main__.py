"""``python apps/deploy -i DICOM_DIR -o OUT -m BUNDLE`` with the request in ``$SYNTHESIS_REQUEST_FILE`` or
``$SYNTHESIS_REQUEST`` (see synthesis_request.py). The bundle's code is imported from ``-m`` (the model path), so
the app runs the code of the bundle it is given."""

import sys

from bundle_path import put_bundle_first

put_bundle_first(sys.argv)

from synthesis_app import LesionSynthesisApp  # noqa: E402  (the bundle's code must be found first)

if __name__ == "__main__":
    LesionSynthesisApp().run()
