"""One DAG per declared connector, `connector_<name>`, made from the files of CONNECTORS_DIR (airflow/connectors/).

A new connector file gives its DAG at the next parse, without a new DAG file: elt/connectors/dags.py has what each
DAG does and why. A worker running one task makes only that task's DAG (Airflow's parsing context).
"""

from airflow.sdk import get_parsing_context

from elt.connectors.dags import render

globals().update(render(only=get_parsing_context().dag_id))
