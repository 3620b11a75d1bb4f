"""The ingest DAG of every source family, `<family>_ingest`, made from its declaration in elt/families/.

One file for every family's ingest DAG, so that a new family (a YAML file) gets its DAG without a new DAG file:
elt/dag_factory.py has what each DAG does and why (decision 0019). A worker running one task makes only that
task's DAG (Airflow's parsing context); the dag-processor and `dag.test()` make them all.
"""

from airflow.sdk import get_parsing_context

from elt.dag_factory import render

globals().update(render("ingest", only=get_parsing_context().dag_id))
