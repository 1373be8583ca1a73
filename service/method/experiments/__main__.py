from service.method.experiments.cli import app

app()
