from setuptools import Extension, setup

# The compiled twin of the DATA hot path is optional: without a compiler the
# build goes on, and the pure-Python path serves alone.
setup(ext_modules=[Extension("txfbtftp._speedups", ["txfbtftp/_speedups.c"], optional=True)])
