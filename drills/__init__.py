"""Annual drills: the year's plan and its rules (``plan.py``), the scheduler that fires them
on one instance (``scheduler.py``, ``jobs.py``), the service that dispatches them as exercise
alerts and edits the plan (``service.py``), reports and compliance (``report.py``,
``compliance.py``), their Redis keys (``store.py``) and HTTP handlers (``handlers.py``)."""
