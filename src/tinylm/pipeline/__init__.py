"""The pipeline's own code: what knows DVC, stage paths and the stages' bookkeeping (see deps.py).

MLflow's telemetry is off unless MLFLOW_DISABLE_TELEMETRY says otherwise: set here, before any module of the
package imports mlflow (which reads it on import).
"""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
