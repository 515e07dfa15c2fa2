"""HTML reports of studies, built from the results folder alone (docs/results-folder.md).

``python -m reports RESULTS_DIR`` or `build_report(results_dir)` writes ``report.html`` (one
self-contained page: it opens offline) and the tables behind it as ``report_*.csv``; for a study
replicated on several class splits, every split's report and a page of the splits side by side
(`reports.splits`). ``python -m reports verdict FOLDER... --out DIR`` writes the verdict tables
of one or more studies for a paper (`reports.verdict`).
"""

from reports.build import build_report
from reports.load import Results, ResultsError, UnfinishedStudyError, load_results

__all__ = ["Results", "ResultsError", "UnfinishedStudyError", "build_report", "load_results"]
