"""The benchmark and parity report: one self-contained HTML page built from asv results and parity records.

Framework-free (standard library only; pandas is optional, for :func:`reports.asv_data.to_dataframe`).

- :mod:`reports.asv_data` reads asv 0.6 result files (``results/<machine>/<commit>-<env>.json``, the compact
  ``result_columns`` format, or through asv's own loader) and ``benchmarks.json`` into tidy rows.
- :mod:`reports.parity_data` reads ``reports/parity/parity-<KERAS_BACKEND>.json`` into records and matrices.
- :mod:`reports.render` turns both into HTML with inline CSS, inline SVG charts and a little inline JS.
- :mod:`reports.build` ties them together (``convlstm-bench report``, ``make report``).
"""

from __future__ import annotations

__all__ = ["build_report"]


def build_report(*args, **kwargs):
    """See :func:`reports.build.build_report`."""
    from .build import build_report as _build

    return _build(*args, **kwargs)
