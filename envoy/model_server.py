"""A real KServe model server for one revision of the demo InferenceService.

Trains an iris classifier from scikit-learn's bundled data at start (no download) and
serves it with KServe's own ModelServer, V1 and V2 REST protocols, gRPC off:

    python envoy/model_server.py --model_name sklearn-iris --kind svc --http_port 8081 \
        --enable_grpc false

`--kind svc` and `--kind tree` answer differently on [[7.7, 3.0, 6.1, 2.3]] (2 and 1),
so a client can tell from the prediction which revision served it.
"""

import argparse

import kserve
from kserve.protocol.rest import server as rest_server
from kserve.utils.utils import get_predict_input, get_predict_response
from sklearn.datasets import load_iris
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

# KServe 0.21 hard-codes uvicorn's host to 0.0.0.0. A local demo or test must not
# listen on every interface, so bind the REST server to loopback (or --bind).
_rest_init = rest_server.RESTServer.__init__
BIND_HOST = "127.0.0.1"


def _loopback_init(self, *args, **kwargs):
    _rest_init(self, *args, **kwargs)
    self.config.host = BIND_HOST


rest_server.RESTServer.__init__ = _loopback_init


class IrisModel(kserve.Model):
    def __init__(self, name: str, kind: str):
        super().__init__(name)
        self.kind = kind
        self.model = None
        self.load()

    def load(self) -> bool:
        features, labels = load_iris(return_X_y=True)
        if self.kind == "svc":
            self.model = SVC(gamma="scale").fit(features, labels)
        else:
            self.model = DecisionTreeClassifier(max_depth=1, random_state=0).fit(features, labels)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        instances = get_predict_input(payload)
        result = self.model.predict(instances)
        return get_predict_response(payload, result, self.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--kind", choices=["svc", "tree"], required=True)
    parser.add_argument("--bind", default="127.0.0.1", help="address the REST server listens on")
    args, _ = parser.parse_known_args()
    BIND_HOST = args.bind
    kserve.ModelServer().start([IrisModel(args.model_name, args.kind)])
