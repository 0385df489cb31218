"""persona on Apache Spark: cleaning, MLlib ALS and batch scoring for shops beyond one machine.

An optional extra (``pip install 'persona-recsys[spark]'``: pyspark 4, on Java 17 or newer).
Nothing here imports pyspark until a function runs, so ``import persona`` never does.

- :func:`read_events`, :func:`clean` -> :class:`SparkInteractions`: events from Parquet, Delta,
  JDBC or Spark SQL, cleaned by the rules of ``persona.Interactions`` (event weights, duplicates,
  activity filters, the report) with persona id maps;
- :func:`fit_als`: implicit ALS trained by Spark MLlib, returned as a persona ``ALS`` that serves,
  filters and saves like a locally trained one (:func:`mllib_reg_param` maps the regularisation;
  :func:`import_mllib_als` imports a model trained by hand);
- :func:`fit_per_group`: persona's own models (EASE, ItemKNN...) per category, one Spark task each;
- :func:`recommend_all`: every user's top-n from a persona artifact as a Spark job
  (``user, item, score, rank``), and :func:`plan_audience` for a campaign over that table;
- :func:`local_session`: a local-mode SparkSession for one machine and tests.

docs/scale.md has the plan for a shop of a billion events.
"""

from __future__ import annotations

from .._lazy import lazy_namespace

__all__ = ["read_events", "clean", "SparkInteractions", "fit_als", "mllib_reg_param", "import_mllib_als",
           "fit_per_group", "recommend_all", "plan_audience", "local_session"]

__getattr__, __dir__ = lazy_namespace(
    __name__, globals(), __all__,
    names={"read_events": "ingest", "clean": "ingest", "SparkInteractions": "ingest", "fit_als": "als",
           "mllib_reg_param": "als", "import_mllib_als": "als", "fit_per_group": "groups",
           "recommend_all": "scoring", "plan_audience": "scoring", "local_session": "_session"})
