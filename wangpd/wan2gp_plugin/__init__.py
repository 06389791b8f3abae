"""wangpd's plugin for Wan2GP (installed by ``wangpctl wan2gp install-plugin`` as ``plugins/wan2gp-wangpd/``).

It runs in Wan2GP's Python, where wangpd is not installed: standard library and gradio only, gradio imported only
when Wan2GP builds the tab. Wan2GP imports ``plugin.py`` from here and instantiates its ``WAN2GPPlugin`` subclass.
"""
