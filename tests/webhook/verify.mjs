import http from "node:http";
import { Webhook } from "standardwebhooks";

const webhook = new Webhook(process.env.WEBHOOK_SECRET); // the endpoint's whsec_... secret

http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    try { // checks webhook-signature, and webhook-timestamp within 5 minutes
      const event = webhook.verify(Buffer.concat(chunks).toString("utf8"), req.headers);
      console.log(event.type, event.account_id, event.sequence);
      res.writeHead(204).end();
    } catch {
      res.writeHead(400).end();
    }
  });
}).listen(Number(process.env.PORT ?? 8000), "127.0.0.1");
