"""The Streamlit live view of ticks.agg.1s and the pipeline-health page."""
