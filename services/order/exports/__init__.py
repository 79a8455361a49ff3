"""The export worker: `python -m services.order.exports` writes report exports as CSV.

It consumes the `exports` queue (`reports.export_requested`, from the order
service's outbox through the relay) with the queue kit and writes each job in
small chunks (`runner.ExportRunner`), each chunk with its checkpoint in one
short transaction, so a job whose worker died resumes where it stopped.
"""
