"""The similarity index's search as it runs on PostgreSQL: one scan of bit counts in SQL, whose
candidates the same code then ranks as on SQLite."""


def test_postgresql_finds_a_copy_and_a_crop_among_thousands_of_fingerprints(production):
    found = production.script("""
        import io, random
        from PIL import Image
        from generation.provenance.models import ImageFingerprint
        from generation.provenance.trace import similar_images
        from tests.support import photo

        random.seed(5)
        ImageFingerprint.objects.bulk_create(ImageFingerprint(
            image_id=n, phash=random.getrandbits(64) - 2**63, whash=random.getrandbits(64) - 2**63,
            width=random.choice([512, 768, 1024]), height=random.choice([512, 768, 1024])) for n in range(1, 5001))
        square, wide = photo(1), photo(3, 768, 512)
        ImageFingerprint.of(10**6, square).save()
        ImageFingerprint.of(10**6 + 1, wide).save()
        jpeg = io.BytesIO()
        square.save(jpeg, format="JPEG", quality=40)
        print(json.dumps({"jpeg": similar_images(Image.open(jpeg)),
                          "crop": similar_images(wide.crop((0, 0, 640, 512))),
                          "stranger": similar_images(photo(9)),
                          "flat": similar_images(Image.new("RGB", (632, 462), "gray"))}))  # a hash of -2**63
    """)
    assert [(image_id, how) for image_id, _, how in found["jpeg"]] == [(10**6, "as it is")]
    assert [image_id for image_id, _, _ in found["crop"]] == [10**6 + 1] and "on the right" in found["crop"][0][2]
    assert found["stranger"] == [] and found["flat"] == []
