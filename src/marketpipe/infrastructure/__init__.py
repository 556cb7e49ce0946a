"""Infrastructure layer: concrete storage, repositories, data sources, databases and event publishers."""
