"""Start the test provider: set up its database from the config, then serve until stopped."""

import json
import os
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main(config_path: str) -> None:
    config = json.loads(open(config_path).read())
    os.environ.update(DJANGO_SETTINGS_MODULE="tests.oidc_idp.settings", IDP_DATABASE=config["database"],
                      IDP_SITE_URL=f"http://127.0.0.1:{config['port']}")
    import django
    from django.core.management import call_command

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.wsgi import get_wsgi_application
    from oidc_provider.models import Client, ResponseType

    call_command("migrate", verbosity=0)
    call_command("creatersakey", stdout=open(os.devnull, "w"))
    for person in config["users"]:
        user = User.objects.create_user(person["username"], email=person["email"], password=person["password"])
        user.groups.set([Group.objects.get_or_create(name=name)[0] for name in person.get("groups", [])])
    for entry in config["clients"]:
        client = Client.objects.create(name=entry["id"], client_id=entry["id"], client_secret=entry["secret"],
                                       jwt_alg="RS256", require_consent=False, redirect_uris=entry["redirect_uris"])
        client.response_types.add(ResponseType.objects.get(value="code"))
    server = make_server("127.0.0.1", config["port"], get_wsgi_application(), server_class=Threaded, handler_class=Quiet)
    print("serving", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
