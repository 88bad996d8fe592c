"""The sections of the report, one module per concern; each ``section_*`` returns the HTML of one ``<section>``."""

from .all_results import section_all
from .compile_history import section_compile, section_history
from .efficiency import section_efficiency
from .environment import section_environment
from .memory import section_memory
from .overview import section_overview
from .parity import section_parity
from .throughput import section_throughput

__all__ = ["section_all", "section_compile", "section_efficiency", "section_environment", "section_history",
           "section_memory", "section_overview", "section_parity", "section_throughput"]
