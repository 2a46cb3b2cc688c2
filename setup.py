"""The one compiled part of classzoo, optional: the JPEG window decoder (data/_jpeg_region.c).

It needs a C compiler and libjpeg-turbo's headers (Debian / Ubuntu: ``libjpeg-dev``; Fedora:
``libjpeg-turbo-devel``). Where either is missing, the build says so and installs classzoo
without it: training then decodes whole images, the same pixels with more CPU per image
(data/jpeg_region.py; each run records which in resolved.yaml, ``software: jpeg_windows``).
Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all (distutils' CCompilerError and others)
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # no jpeglib.h, an old libjpeg, no libjpeg to link
            self._skip(exc)

    def _skip(self, exc: Exception) -> None:
        self.warn(
            f"classzoo: the JPEG window decoder was not built ({exc}); training will decode "
            "whole JPEGs (the same pixels, more CPU). A C compiler and libjpeg-turbo's headers "
            "(libjpeg-dev on Debian / Ubuntu, libjpeg-turbo-devel on Fedora) build it when "
            "classzoo is installed again."
        )


setup(
    ext_modules=[
        Extension(
            "classzoo.data._jpeg_region",
            ["src/classzoo/data/_jpeg_region.c"],
            libraries=["jpeg"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
