"""The RabbitMQ management UI in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by selenium, logged in as a user, opening pages and keeping screenshots.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

INSTALL = "apt-get install chromium chromium-driver && pip install selenium"


class BrowserMissing(AssertionError):
    """No Chromium or chromedriver on this machine (one line: what to install)."""


class ManagementUI:
    def __init__(self, driver: webdriver.Chrome, base: str) -> None:
        self.driver = driver
        self.base = base.rstrip("/")

    def login(self, user: str, password: str) -> None:
        self.driver.get(f"{self.base}/")
        wait = WebDriverWait(self.driver, 30)
        wait.until(lambda d: d.find_elements(By.NAME, "username"))
        self.driver.find_element(By.NAME, "username").send_keys(user)
        self.driver.find_element(By.NAME, "password").send_keys(password)
        self.driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait.until(lambda d: d.find_elements(By.ID, "logout"))

    def open(self, page: str, showing: list[str], screenshot: Path, timeout: float = 60) -> str:
        """Open `#/<page>` and wait until every name in `showing` is on it (the UI refreshes its
        tables every few seconds); save a screenshot; return the page's visible text."""
        self.driver.get(f"{self.base}/#/{page}")
        try:
            WebDriverWait(self.driver, timeout, poll_frequency=1).until(
                lambda d: all(name in d.find_element(By.TAG_NAME, "body").text
                              for name in showing))
        except TimeoutException:
            self.driver.save_screenshot(str(screenshot))
            text = self.driver.find_element(By.TAG_NAME, "body").text
            missing = [name for name in showing if name not in text]
            raise AssertionError(f"{page}: {missing} not shown (screenshot {screenshot})") \
                from None
        self.driver.save_screenshot(str(screenshot))
        return str(self.driver.find_element(By.TAG_NAME, "body").text)


@contextmanager
def management_ui(base: str) -> Iterator[ManagementUI]:
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        raise BrowserMissing(f"headless Chromium is required: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield ManagementUI(driver, base)
    finally:
        driver.quit()
