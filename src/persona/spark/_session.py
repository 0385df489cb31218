"""pyspark on demand: the import with an install hint, Java's presence, and a local session.

``persona.spark`` never imports pyspark at module level, so ``import persona.spark`` (and
``import persona``) work without it; the functions that need Spark call :func:`require_pyspark`.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Mapping

from ..errors import DataError, UnsupportedError

INSTALL_HINT = "pip install 'persona-recsys[spark]' (pyspark 4, which runs on Java 17 or newer)"


def require_pyspark():
    """The ``pyspark`` module, or an ImportError saying what to install."""
    try:
        import pyspark
        import pyspark.sql  # noqa: F401
    except ImportError:
        raise ImportError(f"persona.spark needs pyspark, which is not installed; {INSTALL_HINT}") from None
    return pyspark


def java_executable() -> str | None:
    """The ``java`` Spark will start: ``$JAVA_HOME/bin/java`` when set, else the one on ``PATH``."""
    home = os.environ.get("JAVA_HOME")
    if home:
        path = os.path.join(home, "bin", "java")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("java")


def check_dataframe(df: Any, name: str):
    """``df`` if it is a Spark DataFrame; DataError otherwise."""
    require_pyspark()
    from pyspark.sql import DataFrame

    if not isinstance(df, DataFrame):
        raise DataError(f"{name}: expected a Spark DataFrame, got {type(df).__name__}; read the events with "
                        "spark.read... (or persona.spark.read_events), or use persona.Interactions.from_frame for a "
                        "pandas table on one machine")
    return df


def local_session(cores: int = 2, *, memory: str = "2g", shuffle_partitions: int | None = None,
                  app_name: str = "persona", config: Mapping[str, str] | None = None):
    """A SparkSession in local mode for jobs and tests on one machine (``local[cores]``).

    The web UI is off, shuffles use ``shuffle_partitions`` (default ``2 * cores``) partitions,
    the session time zone is UTC (so naive timestamps read as persona reads them), pandas
    conversions go through Arrow and the Python workers run this interpreter (``PYSPARK_PYTHON``
    is set to it when unset). ``config`` adds or overrides settings. A session that is
    already running is returned as it is (Spark allows one per process).

    Parameters
    ----------
    cores : int
        Worker threads of the local master.
    memory : str
        The driver's heap (``spark.driver.memory``); in local mode it holds the executors too.
    shuffle_partitions : int, optional
    app_name : str
    config : mapping of str to str, optional

    Returns
    -------
    pyspark.sql.SparkSession

    Raises
    ------
    UnsupportedError
        No ``java`` was found (Spark runs on the JVM).
    """
    from .._validate import check_int

    require_pyspark()
    cores = check_int(cores, "cores", min=1, hint="pass the number of local worker threads, e.g. 2")
    if java_executable() is None:
        raise UnsupportedError("Spark needs Java 17 or newer, and no java was found on PATH or in JAVA_HOME; install "
                               "it (apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME")
    from pyspark.sql import SparkSession

    settings = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(shuffle_partitions or 2 * cores),
        "spark.driver.memory": memory,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        **{str(k): str(v) for k, v in (config or {}).items()},
    }
    if not os.environ.get("PYSPARK_PYTHON"):
        # the workers run this interpreter (with persona installed), not whatever `python3` is on PATH;
        # pyspark reads the variable when the SparkContext starts
        os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = SparkSession.builder.master(f"local[{cores}]").appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
