"""Builds the compiled TS packet path (`mux._fast`, Cython) beside the pure-Python package;
everything else about the package is in pyproject.toml.

`MOQSRT_PURE_PYTHON=1` at build time skips the extension (the pure-Python fallback is used);
otherwise a failed build fails the install, never silently.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

if os.environ.get("MOQSRT_PURE_PYTHON") == "1":
    ext_modules: list[Extension] = []
else:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [Extension("mux._fast", ["mux/_fast.pyx"])],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )

setup(ext_modules=ext_modules)
