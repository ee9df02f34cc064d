"""The MONAI Deploy application of this bundle (``python apps/deploy -i DICOM_DIR -o OUT -m BUNDLE``): its modules
import one another by their plain names, as the App SDK's packager runs the folder as a script."""
