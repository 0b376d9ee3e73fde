"""Build hook for the native fan-out (adapters/webrtc/_fanout.c); everything else is in pyproject.toml.

The extension is optional: on a machine without a C compiler, Python headers or OpenSSL's libcrypto
headers the build prints a warning and the install still succeeds; the room then sends through the
pure-Python ``Outlet`` path (``spacebridge doctor`` says which engine is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "adapters.webrtc._fanout",
            sources=["adapters/webrtc/_fanout.c"],
            depends=["adapters/webrtc/_fanout_srtp.h"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-std=gnu11"],
            optional=True,
        )
    ]
)
