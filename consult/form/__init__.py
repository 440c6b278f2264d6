"""The response form: partnerships answer in the engine itself, behind each invitation's link (`consult form
serve`)."""
