"""DataFrames over JSON: what the store's aggregations return, in a shape clients rebuild.

The store answers aggregations with pandas DataFrames; the API sends them as
`{"columns": [{"name", "type"}], "records": [...]}` so the CLI can rebuild the
same DataFrame (column order and time columns included) and print it as a
table, CSV or JSON, or write Parquet. Times travel as RFC3339 with nanoseconds,
like flow times, and missing values as null.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd

from spyglass.model.flow import format_time_ns

ColumnType = str  # "int" | "float" | "bool" | "datetime" | "string" | "list" | "object"


def column_type(series: pd.Series) -> ColumnType:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    sample = next((v for v in series if v is not None and not _is_nan(v)), None)
    if isinstance(sample, str):
        return "string"
    if isinstance(sample, (list, tuple, np.ndarray)):
        return "list"
    if isinstance(sample, (dt.datetime, pd.Timestamp)):
        return "datetime"
    return "object" if sample is not None else "string"


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def to_json_value(v: Any) -> Any:
    """One cell as plain JSON (numpy scalars, timestamps, arrays, NaN/NaT as null)."""
    if v is None or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp):
        if v.tzinfo is None:
            v = v.tz_localize("UTC")
        return format_time_ns(int(v.value))
    if isinstance(v, dt.datetime):
        return to_json_value(pd.Timestamp(v))
    if isinstance(v, np.datetime64):
        if np.isnat(v):
            return None
        return format_time_ns(int(v.astype("datetime64[ns]").astype(np.int64)))
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return [to_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): to_json_value(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def frame_to_table(df: Any) -> dict[str, Any]:
    """`{"columns": [...], "records": [...]}` for a DataFrame (or a list of records)."""
    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(list(df or []))
    columns = [{"name": str(c), "type": column_type(df[c])} for c in df.columns]
    names = [str(c) for c in df.columns]
    records = [dict(zip(names, (to_json_value(v) for v in row), strict=True))
               for row in df.itertuples(index=False, name=None)]
    return {"columns": columns, "records": records}


def table_to_frame(body: dict[str, Any]) -> pd.DataFrame:
    """Inverse of `frame_to_table` (what the CLI does with an API answer)."""
    columns = body.get("columns") or []
    names = [str(c["name"]) for c in columns]
    df = pd.DataFrame(body.get("records") or [], columns=names)
    for col in columns:
        name, kind = str(col["name"]), col.get("type")
        if kind == "datetime":
            df[name] = pd.to_datetime(df[name], utc=True, format="ISO8601")
        elif kind == "int" and not df[name].isna().any():
            df[name] = df[name].astype("int64")
        elif kind == "float":
            df[name] = df[name].astype("float64")
    return df
