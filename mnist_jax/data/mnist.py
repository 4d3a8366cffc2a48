"""The facts of MNIST that the code relies on, in one place: its tfds name and version, classes, sizes."""

NAME = "mnist"
VERSION = "3.0.1"  # of tfds's mnist builder, whose directory layout the project writes
NUM_CLASSES = 10  # the digits 0-9, each its own label
CLASSES = tuple(str(digit) for digit in range(NUM_CLASSES))  # class i is the digit i
IMAGE_SHAPE = (28, 28, 1)  # uint8, white ink on black
TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000
TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
TRAIN_FIRST_LABELS = (5, 0, 4, 1, 9)
TEST_FIRST_LABELS = (7, 2, 1, 0, 4)
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081  # of the training images scaled to [0, 1]
