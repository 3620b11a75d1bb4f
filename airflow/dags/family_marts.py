"""The marts DAG of every source family, `<family>_marts`, made from its declaration in elt/families/.

Each is scheduled on the `<family>_raw` asset its ingest DAG emits and builds the family's dbt folders, one task
per model (elt/dag_factory.py, decisions 0015 and 0019). Apart from family_ingest.py because the dag-processor
parses this file about once a second while dbt tasks finish: it reads the family files and the manifest only.
"""

from airflow.sdk import get_parsing_context

from elt.dag_factory import render

globals().update(render("marts", only=get_parsing_context().dag_id))
