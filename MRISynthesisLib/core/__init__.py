"""The synthesis engine: files in and out, input checks, preprocessing, the two-stage pipeline,
model bundles, devices, progress and background jobs. No Qt, no MRML, no command line.

Importing this package imports none of its modules (torch and MONAI load only when used).
"""
