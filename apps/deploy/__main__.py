"""``python apps/deploy -i DICOM_DIR -o OUT -m BUNDLE`` with the request in ``$SYNTHESIS_REQUEST_FILE`` or
``$SYNTHESIS_REQUEST`` (see synthesis_request.py). The bundle's code is imported from ``-m`` (the model path), so
the app runs the code of the bundle it is given. Bad input ends the run with exit status 2 and one line on stderr
that names the file and the problem."""

import sys

from bundle_path import NotABundleError, put_bundle_first

try:
    put_bundle_first(sys.argv)
except NotABundleError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)

# the bundle's code must be found first; the request is checked before the app imports torch and the network
from synthesis_request import load_request  # noqa: E402

from bundle.errors import InputError, OutputError  # noqa: E402


def main() -> int:
    try:
        request = load_request()
        from synthesis_app import LesionSynthesisApp

        LesionSynthesisApp(request=request).run()
    except (InputError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
