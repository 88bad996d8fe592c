"""The ``convlstm-bench`` command line: the top of the project's layering.

It drives everything below it (the implementations, the converters, the report builder); nothing imports it.
``python -m convlstm_bench ...`` is the same as the ``convlstm-bench`` console script.
"""
