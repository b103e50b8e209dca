import os
from http.server import BaseHTTPRequestHandler, HTTPServer
from standardwebhooks import Webhook

webhook = Webhook(os.environ["WEBHOOK_SECRET"])  # the endpoint's whsec_... secret

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:  # checks webhook-signature, and webhook-timestamp within 5 minutes
            event = webhook.verify(body, dict(self.headers))
        except Exception:
            self.send_response(400)
        else:
            print(event["type"], event["account_id"], event["sequence"], flush=True)
            self.send_response(204)
        self.end_headers()

HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Receiver).serve_forever()
