"""A Python agent whose source needs no settings (empty configuration schema)."""
from ferry_sdk import Source, run_agent


class Constant(Source):
    service_type = "constant"

    def configuration_schema(self):
        return {}

    def validate(self, config):
        pass

    def sync(self, job, out):
        for i in range(3):
            out.send(f"doc-{i}", {"n": i})


if __name__ == "__main__":
    run_agent(Constant())
