"""The embedded studio's broker between its web and worker processes: a folder of messages."""

import multiprocessing

from kombu import Connection

from sdweb.embedded import FolderTransport


def options(folder):
    return {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder / "control"),
            "polling_interval": 0}


def send(folder, transport, count):  # in a process of its own, as the web process sends
    with Connection(transport=transport, transport_options=options(folder)) as connection:
        queue = connection.SimpleQueue("jobs")
        for k in range(count):
            queue.put({"k": k, "padding": "x" * 300_000})


def test_a_message_is_never_read_half_written(tmp_path):
    # kombu's own filesystem transport, writing in place, fails this (JSONDecodeError on an empty file)
    (tmp_path / "control").mkdir()
    (tmp_path / "incoming").mkdir()
    count = 400
    sender = multiprocessing.get_context("spawn").Process(target=send, args=(tmp_path, FolderTransport, count))
    sender.start()
    received = []
    with Connection(transport=FolderTransport, transport_options=options(tmp_path)) as connection:
        queue = connection.SimpleQueue("jobs")
        while len(received) < count:
            message = queue.get(timeout=60)
            received.append(message.payload["k"])
            message.ack()
    sender.join()
    assert sorted(received) == list(range(count))
