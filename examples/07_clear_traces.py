"""The seed's "Clearing Traces".

python examples/07_clear_traces.py
"""

from flock.orchestrator import Flock

# Clear all traces
result = Flock.clear_traces()
print(f"Deleted {result['deleted_count']} spans")

# Custom database path
result = Flock.clear_traces(".flock/custom_traces.duckdb")

# Check success
if result["success"]:
    print("✅ Traces cleared!")
else:
    print(f"❌ Error: {result['error']}")
