"""Sphinx configuration: the user guide, the operator guide and the API reference."""
import txfbtftp

project = "txfbtftp"
author = "the txfbtftp authors"
copyright = "2026, " + author
release = txfbtftp.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "repoze.sphinx.autointerface",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autoclass_content = "both"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {"description": "Pluggable TFTP for network boot at scale", "fixed_sidebar": True}
